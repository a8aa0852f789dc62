"""Answering real photographs: find the faces, ask each the FERBench question, draw the answers; the Gradio app."""
