"""Arrow Flight front end: plain Flight (server.py) and Flight SQL on the same port."""
