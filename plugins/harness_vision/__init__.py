"""Built-in datasets and models for image classification."""
