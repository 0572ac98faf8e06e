"""For pip versions without PEP 517 (RHEL 7's pip 9): everything is in setup.cfg."""
from setuptools import setup

setup()
