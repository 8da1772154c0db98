"""peerflow: peer-to-peer multi-agent synthetic data generation."""

__version__ = "0.1.0"
