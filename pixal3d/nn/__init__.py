"""Neural-network building blocks shared by the models: attention and transformer blocks."""
