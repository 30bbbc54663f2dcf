"""Training the MOSS-architecture codec from scratch: data crops, reconstruction losses, the resumable loop."""
