"""bmc-tune: a calibrated model of KV-cache growth cost in LLM decoding, and an r-tuner.

Light on purpose: importing this package never imports torch (schedulers call predict()).
"""

from bmc_model.core.choose import Choices, choose_many
from bmc_model.core.decide import Recommendation, recommend
from bmc_model.core.errors import BMCError
from bmc_model.core.many import Predictions, predict_many
from bmc_model.core.policy import NAMED, Policy, parse_policy
from bmc_model.core.predict import Prediction, predict
from bmc_model.core.profile import Profile, load_profile
from bmc_model.core.specs import ModelSpec, get_spec, presets, resolve_spec, spec_from_config

__all__ = ["BMCError", "Choices", "NAMED", "ModelSpec", "Policy", "Prediction", "Predictions", "Profile",
           "Recommendation", "choose_many", "get_spec", "load_profile", "parse_policy", "predict", "predict_many",
           "presets", "recommend", "resolve_spec", "spec_from_config"]
__version__ = "0.1.0"
