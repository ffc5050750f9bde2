"""Small apps the live tests serve, loaded as ``apps.<module>:<name>`` (the server runs in tests/)."""
