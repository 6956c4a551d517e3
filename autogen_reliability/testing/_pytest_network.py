"""Part of the pytest plugin (see ``autogen_reliability.testing.plugin``): to be written."""
