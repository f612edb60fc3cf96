"""The known weight releases (data, :data:`RELEASES`), registered by :mod:`forensics.weights`;
documented in ``weights/README.md`` (keep the two in step).

Sources were checked against the authors' repositories (see docs/README.md). A checksum
is recorded only where it was published or read from the released file itself; ``sha256=None``
means unknown, never guessed. ``direct=False`` marks a source that is a page or shared folder,
from which the file has to be fetched by hand.
"""
from .papers import CLIP2021, RINE2024, TFF2022, UFD2023, WANG2020
from .weight_spec import WeightSpec

#: Every known release, in declaration order (registered by :mod:`forensics.weights`).
RELEASES: list[WeightSpec] = []

# --- licences (papers: forensics.papers) ------------------------------------------------------

CNNDET_LICENSE = "CC BY-NC-SA 4.0 (PeterWang512/CNNDetection)"
TFF_LICENSE = "MIT (sutd-visual-computing-group/transferable-forensic-features)"

CLIP_TAG = "clip.vit_l14_openai"

# CNNDetection / T-FF training checkpoints (docs/training.md; docs/ffrs.md).
TRAINING_CKPT = ("torch zip: dict {'model': state_dict, 'optimizer': Adam state_dict, 'total_steps': int}; "
                 "loaders read only ['model'] (saved on GPU: load with map_location='cpu')")

# --- Wang et al. (CNNDetection) ResNet-50 -------------------------------------------------------

CNNDET_DROPBOX = {"0.5": "https://www.dropbox.com/s/2g2jagq2jn1fd0i/blur_jpg_prob0.5.pth?dl=1",
                  "0.1": "https://www.dropbox.com/s/h7tkpcgiwuftb6g/blur_jpg_prob0.1.pth?dl=1"}

for prob, url in CNNDET_DROPBOX.items():
    RELEASES.append(WeightSpec(
        tag=f"resnet50.cnndet_blur_jpg_prob{prob}",
        relpath=f"resnet50/blur_jpg_prob{prob}.pth",
        url=url,
        detector="resnet50",
        description=(f"Wang et al. universal detector: ResNet-50 (fc 2048->1) trained on 20 ProGAN classes with "
                     f"Gaussian blur + JPEG augmentation, each with probability {prob}"),
        paper=WANG2020,
        format=f"{TRAINING_CKPT}; torchvision ResNet-50 key names, fc.weight [1,2048]",
        license=CNNDET_LICENSE,
        notes=("URL from CNNDetection weights/download_weights.sh (which fetches it with ?dl=0; ?dl=1 asks "
               "Dropbox for the file itself). The T-FF Drive folder also holds a copy. No checksum published. "
               "T-FF expects the same file at weights/resnet50/blur_jpg_prob{B}.pth, hence this path."),
    ))

# --- T-FF (Chandrasegaran et al.) detectors: one shared Google Drive folder ------------------------

TFF_DRIVE = "https://drive.google.com/drive/folders/1MU8xCdK-ihxk1l2OHNYzjF76AMgs70Fk"
TFF_DRIVE_NOTE = ("Published in the T-FF README's 'Pre-trained Models' Google Drive folder (a folder, not a "
                  "file link: download by hand); the file names inside the folder could not be confirmed "
                  "offline. No checksum published.")
EFB0_FORMAT = (f"{TRAINING_CKPT}; efficientnet_pytorch 0.7.1 key names (_conv_stem..., _blocks.N..., "
               "_fc.weight [1,1280])")

RELEASES.append(WeightSpec(
    tag="efb0.tff_blur_jpg_prob0.5",
    relpath="efb0/blur_jpg_prob0.5.pth",
    url=TFF_DRIVE,
    direct=False,
    detector="efb0",
    description=("T-FF universal detector: EfficientNet-B0 (1 output, ImageNet init) trained with the Wang et al. "
                 "recipe (ProGAN, blur + JPEG with probability 0.5)"),
    paper=TFF2022,
    format=EFB0_FORMAT,
    license=TFF_LICENSE,
    notes=TFF_DRIVE_NOTE + " T-FF reads it as weights/efb0/blur_jpg_prob0.5.pth.",
))

for arch, name, fmt in (("resnet50", "ResNet-50 (fc 2048->1)", f"{TRAINING_CKPT}; torchvision ResNet-50 key names"),
                        ("efb0", "EfficientNet-B0 (1 output)", EFB0_FORMAT)):
    RELEASES.append(WeightSpec(
        tag=f"{arch}.tff_color_robust",
        relpath=f"{arch}/color_robust.pth",
        url=TFF_DRIVE,
        direct=False,
        detector=arch,
        description=(f"T-FF colour-robust (CR) universal detector: {name} trained with the Wang et al. recipe "
                     "plus RandomGrayscale(p=0.5) after the flip (docs/colour.md)"),
        paper=TFF2022,
        format=fmt,
        license=TFF_LICENSE,
        notes=(TFF_DRIVE_NOTE + " No T-FF script loads CR weights by name (it would read them as "
               f"weights/{arch}/blur_jpg_prob<TAG>.pth with --blur_jpg <TAG>); this toolkit expects them at "
               f"weights/{arch}/color_robust.pth."),
    ))

# --- RINE (Koutlis & Papadopoulos): trainable heads on frozen CLIP ViT-L/14 ------------------------

RINE_CKPT = "https://github.com/mever-team/rine/tree/main/ckpt"
RINE_RAW = "https://raw.githubusercontent.com/mever-team/rine/main/ckpt/"
# name: (nproj q, proj_dim d, trained on, sha256 or None); docs/tie.md.
RINE_HEADS = {
    "1class": (4, 1024, "ProGAN horse (1 epoch, factor 0.1)", None),
    "2class": (4, 128, "ProGAN chair, horse (1 epoch, factor 0.2)",
               "680d301b6d191da85b9dabcebf42cd3df20c5c669fa8320c498f835d02bf5ccb"),
    "4class": (2, 1024, "ProGAN car, cat, chair, horse (1 epoch, factor 0.2)", None),
    "ldm": (4, 1024, "the LDM training set of Corvi et al. (5 epochs, factor 0.4)", None),
}

for name, (nproj, proj_dim, trained_on, sha256) in RINE_HEADS.items():
    filename = f"model_{name}_trainable.pth"
    present_upstream = sha256 is not None
    RELEASES.append(WeightSpec(
        tag=f"rine.{name}",
        relpath=f"rine/{filename}",
        url=RINE_RAW + filename if present_upstream else RINE_CKPT,
        direct=present_upstream,
        detector="rine",
        description=(f"RINE {name} head (nproj={nproj}, proj_dim={proj_dim}, 24 ViT-L/14 blocks) trained on "
                     f"{trained_on}; needs the CLIP ViT-L/14 backbone ({CLIP_TAG})"),
        paper=RINE2024,
        sha256=sha256,
        format=("torch zip: plain dict of the non-CLIP head tensors (alpha [1,24,d], proj1.*, proj2.*, head.*), "
                "float32, saved on cuda:0 (load with map_location='cpu')"),
        license="Apache-2.0 (mever-team/rine)",
        notes=("Published in mever-team/rine ckpt/ (1,139,686 bytes, 283,009 parameters)." if present_upstream else
               "Listed in the mever-team/rine git tree (ckpt/) but its blob is absent from the public repository, "
               "so no direct link or checksum can be given; (nproj, proj_dim) are inferred from "
               "get_our_trained_model and the best-config search (docs/tie.md). Ask the authors, or retrain "
               "with scripts/best.py."),
        options={"nproj": nproj, "proj_dim": proj_dim},
        requires=(CLIP_TAG,),
    ))

# --- UniversalFakeDetect (Ojha et al.): linear probe on CLIP ViT-L/14 ------------------------------

RELEASES.append(WeightSpec(
    tag="ufd.fc",
    relpath="ufd/fc_weights.pth",
    url=("https://raw.githubusercontent.com/WisconsinAIVision/UniversalFakeDetect/main/"
         "pretrained_weights/fc_weights.pth"),
    detector="ufd",
    description=("UniversalFakeDetect linear probe Linear(768->1) on the CLIP ViT-L/14 image embedding; needs "
                 f"the CLIP ViT-L/14 backbone ({CLIP_TAG})"),
    paper=UFD2023,
    sha256="477100745713bcc957beb2b40859536859b6483fd6301b3b9293151b194c7847",
    format="torch zip: OrderedDict {'weight': [1,768], 'bias': [1]} float32, saved on cuda:0 (4,083 bytes)",
    license="MIT (WisconsinAIVision/UniversalFakeDetect)",
    notes=("pretrained_weights/fc_weights.pth of the official repository, first published as "
           "Yuheng-Li/UniversalFakeDetect (GitHub redirects to WisconsinAIVision/UniversalFakeDetect)."),
    requires=(CLIP_TAG,),
))

# --- backbone: OpenAI CLIP ViT-L/14 (224 px) -------------------------------------------------------

CLIP_SHA256 = "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836"
RELEASES.append(WeightSpec(
    tag=CLIP_TAG,
    relpath="clip/ViT-L-14.pt",
    converted="clip/ViT-L-14.safetensors",
    url=f"https://openaipublic.azureedge.net/clip/models/{CLIP_SHA256}/ViT-L-14.pt",
    detector=None,
    description="OpenAI CLIP ViT-L/14 at 224 px (not @336px, not OpenCLIP): the frozen backbone of RINE and UFD",
    paper=CLIP2021,
    sha256=CLIP_SHA256,
    format=("TorchScript archive (about 890 MB, fp16 weights); never unpickled: convert it once with "
            "`python -m forensics weights convert weights/clip/ViT-L-14.pt weights/clip/ViT-L-14.safetensors` "
            "(torch.jit.load(...).state_dict())"),
    license="MIT (openai/CLIP)",
    notes=("URL as in openai/CLIP clip.py and open_clip pretrained.py (ViT-L-14, pretrained='openai', QuickGELU); "
           "the path segment of the URL is the file's sha256, which clip.py checks."),
))

# --- ImageNet initialisation for training -----------------------------------------------------------

RELEASES.append(WeightSpec(
    tag="init.resnet50_imagenet",
    relpath="init/resnet50-19c8e357.pth",
    url="https://download.pytorch.org/models/resnet50-19c8e357.pth",
    detector=None,
    description=("ImageNet-1k ResNet-50 (torchvision, fc 2048->1000): the initialisation CNNDetection and the "
                 "T-FF CR trainer use (networks/resnet.py, resnet50(pretrained=True))"),
    paper="He et al., Deep Residual Learning for Image Recognition, CVPR 2016",
    format="plain state_dict in torchvision ResNet-50 key names (legacy, pre-zip torch serialisation)",
    license="BSD-3-Clause (torchvision); trained on ImageNet-1k (ImageNet terms of access)",
    notes=("model_urls['resnet50'] of the torchvision-style networks/resnet.py that CNNDetection ships. The file "
           "name carries the first 8 hex digits of its sha256 (19c8e357, the torch.hub naming convention); the full "
           "digest is not published. torchvision >= 0.13 serves the same ImageNet-1k V1 weights re-saved as "
           "resnet50-0676ba61.pth (ResNet50_Weights.IMAGENET1K_V1)."),
))

RELEASES.append(WeightSpec(
    tag="init.efb0_imagenet",
    relpath="init/efficientnet-b0-355c32eb.pth",
    url="https://github.com/lukemelas/EfficientNet-PyTorch/releases/download/1.0/efficientnet-b0-355c32eb.pth",
    detector=None,
    description=("ImageNet-1k EfficientNet-B0 (efficientnet_pytorch, _fc 1280->1000): the initialisation of the "
                 "T-FF EfficientNet-B0 detectors (EfficientNet.from_pretrained('efficientnet-b0'))"),
    paper="Tan & Le, EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks, ICML 2019",
    format="plain state_dict in efficientnet_pytorch key names",
    license="Apache-2.0 (lukemelas/EfficientNet-PyTorch; weights ported from the TensorFlow release)",
    notes=("url_map['efficientnet-b0'] of efficientnet_pytorch 0.7.1 utils.py. The file name carries the first "
           "8 hex digits of its sha256 (355c32eb, the torch.hub naming convention); the full digest is not published."),
))
