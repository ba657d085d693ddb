"""`slimtune explain`: which input tokens a prediction rests on (Integrated Gradients, through captum)."""
