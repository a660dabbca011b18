"""Fine-tuning methods. A method is `methods/<name>.py` + `conf/method/<name>.yaml` whose
`_target_` names the class; Hydra's instantiate is the registry."""
from methods.base import Method, MethodContext

__all__ = ["Method", "MethodContext"]
