"""`image`: the standard supervised recipe for image classification (SGD, cross-entropy, crop and flip).

Everything it does is `dstbench.train.Trainer`'s default behaviour; a recipe plugin (AdamW with mixup for a
DeiT, say) subclasses `Trainer` the same way and overrides `build_optimizer` or `forward`.
"""

from dstbench.hookspecs import hookimpl
from dstbench.train import Trainer


class ImageTrainer(Trainer):
    name = "image"
    description = "Supervised image classification: SGD with momentum, cross-entropy, device-side crop and flip"
    modality = "image"
    default = True


@hookimpl
def register_trainers(register):
    register(ImageTrainer)
