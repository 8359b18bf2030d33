"""The pipeline's stages: plain functions from a config slice and the previous result."""
