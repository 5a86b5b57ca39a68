"""Multi-process training: `accelerate launch` of the train step and the program each rank runs."""
