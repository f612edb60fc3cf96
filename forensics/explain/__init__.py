"""Explanations of detectors: LRP with T-FF's beta=0 composite (:mod:`.lrp`, rules in
:mod:`.lrp_rules`, canonizers in :mod:`.canonizers`)."""
from .lrp import (LRP_CONFIGS, SIGNS, LRPExplainer, LRPResult, LRPSpec, explain_lrp, lrp_spec, register_lrp,
                  start_signal)

__all__ = ["LRP_CONFIGS", "SIGNS", "LRPExplainer", "LRPResult", "LRPSpec", "explain_lrp", "lrp_spec",
           "register_lrp", "start_signal"]
