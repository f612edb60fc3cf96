"""Citations of the papers behind the detectors and releases (data; a leaf module), declared once so a
detector's declaration and its releases name the same paper."""

WANG2020 = "Wang et al., CNN-generated images are surprisingly easy to spot... for now, CVPR 2020"
TFF2022 = ("Chandrasegaran et al., Discovering Transferable Forensic Features for CNN-generated Images "
           "Detection, ECCV 2022")
RINE2024 = ("Koutlis & Papadopoulos, Leveraging Representations from Intermediate Encoder-blocks for "
            "Synthetic Image Detection, ECCV 2024")
UFD2023 = ("Ojha, Li & Lee, Towards Universal Fake Image Detectors that Generalize Across Generative Models, "
           "CVPR 2023")
CLIP2021 = "Radford et al., Learning Transferable Visual Models From Natural Language Supervision, ICML 2021"
