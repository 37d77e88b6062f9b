"""Streamlit chat UI; talks to the API over HTTP only."""
