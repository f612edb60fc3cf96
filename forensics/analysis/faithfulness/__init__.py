"""Which explanation can be trusted (docs/faithfulness.md): perturbation curves and SRG
(:mod:`.perturbation`), localisation against ground-truth masks (:mod:`.localisation`), cascading
model-parameter randomisation (:mod:`.randomisation`), bootstrap CIs (:mod:`.stats`), the counterfactual
check that a mask is where the detector's evidence is (:mod:`.validity`), and the run over a detector's
methods behind ``analyses/faithfulness.py`` (:mod:`.run`; its tables and figures: :mod:`.outputs`)."""
from .localisation import METRICS as LOCALISATION_METRICS, chance_levels, localisation
from .perturbation import FILL_INS, PerturbationConfig, area, perturbation_curves, srg
from .randomisation import cascade_groups, cascading_randomisation, model_sensitive, restored
from .stats import Estimate, bootstrap_ci
from .validity import ValidityResult, mask_validity, random_region

__all__ = ["FILL_INS", "LOCALISATION_METRICS", "Estimate", "PerturbationConfig", "area", "bootstrap_ci",
           "cascade_groups", "cascading_randomisation", "chance_levels", "localisation", "model_sensitive",
           "mask_validity", "perturbation_curves", "random_region", "restored", "srg", "ValidityResult"]
