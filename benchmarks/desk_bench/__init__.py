"""The dual-control support-desk benchmark: a tau2-style thread pool against peerflow."""
