"""Entry point for `kopf run -m adaptinf.operator.main`: importing it registers the handlers."""
from . import handlers  # noqa: F401
