"""Making a trained model smaller and faster for inference, measured: `elastrain optimize`."""
