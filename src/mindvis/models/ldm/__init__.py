"""Stage B: the double-conditioned latent diffusion model (MinD-Vis DC-LDM) on diffusers modules.

presets       sizes: CompVis cin256-v2 ("paper") and the embedded demo ("tiny")
autoencoder   the VQ first stage (diffusers VQModel)
unet          the denoising UNet (diffusers UNet2DConditionModel, cin256-v2 layout)
conditioning  fMRI conditioner (context + time branch) and the class embedder of the prior
dc_ldm        the whole model: frozen VQ + UNet + conditioner, noise schedule, loss, trainable sets
sampling      PLMS / DDIM / DPM-Solver++ samplers and uint8 output
"""

from mindvis.models.ldm.conditioning import ClassConditioner, Condition, FmriConditioner
from mindvis.models.ldm.dc_ldm import PRIOR_TRAINABLE, STAGE_B_REFERENCE, TRAINABLE_GROUPS, DcLdm
from mindvis.models.ldm.presets import PAPER, PRESETS, TINY, LdmModelConfig, LdmSpec, ScheduleSpec, UnetSpec, VqSpec
from mindvis.models.ldm.sampling import SAMPLERS, SamplerConfig, sample_images, to_uint8

__all__ = [
    "PAPER", "PRESETS", "PRIOR_TRAINABLE", "SAMPLERS", "STAGE_B_REFERENCE", "TINY", "TRAINABLE_GROUPS",
    "ClassConditioner", "Condition", "DcLdm", "FmriConditioner", "LdmModelConfig", "LdmSpec", "SamplerConfig",
    "ScheduleSpec", "UnetSpec", "VqSpec", "sample_images", "to_uint8",
]
