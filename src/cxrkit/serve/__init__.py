"""One server for a model: a Gradio page for people and a REST API for imaging systems."""
