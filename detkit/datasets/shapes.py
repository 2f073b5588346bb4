"""The synthetic shapes data (:mod:`detkit.synthetic.shapes`, where it lives so that generating it needs no torch),
under the datasets package."""
from detkit.synthetic.shapes import *  # noqa: F401,F403
from detkit.synthetic.shapes import __all__  # noqa: F401
