"""openglm: an open, hackable implementation of the ChatGLM / GLM-4 system."""
