"""Reliability patterns of the ZeroMQ Guide (chapters 4 and 5) and the seed document.

Every pattern is written only against transportkit's interfaces, so it runs on the zmq
backend and in the simulator alike. Parameters default to the Guide's constants.
"""
