"""The two int8 ideas as a run directory records them: read under their names, or the names before 0.2.

base_int8       trained on (and used with) a weight-only int8 frozen base (`train --base-int8`; was base_quantize)
inference_int8  saved by `slimtune quantize`: merged where the method allows, then dynamic int8 when loaded
                (was quantize)
"""

BASE_INT8 = "base_int8"
INFERENCE_INT8 = "inference_int8"
_OLD_NAMES = {BASE_INT8: "base_quantize", INFERENCE_INT8: "quantize"}


def base_int8_of(config: dict) -> str | None:
    return config.get(BASE_INT8) or config.get(_OLD_NAMES[BASE_INT8])


def inference_int8_of(config: dict) -> str | None:
    return config.get(INFERENCE_INT8) or config.get(_OLD_NAMES[INFERENCE_INT8])
