"""The registered encoder families, one import line per family: each module registers its family record
(`polyret.models.encoder_family`) when imported. Import the lookups from here so that every family is
registered before one is looked up."""

from polyret.models.encoder_family import (EncoderFamily, encoder_config_from_dict, encoder_config_to_dict,  # noqa: F401
                                           families, family_for_hf, family_named, family_of)

from polyret.models import hf_t5  # noqa: F401  T5 / mT5 / ByT5
from polyret.models import hf_bert  # noqa: F401  BERT / RoBERTa / XLM-R
from polyret.models import hf_distilbert  # noqa: F401  DistilBERT
from polyret.models import hf_llama  # noqa: F401  Llama / Qwen2 / Qwen3 decoder LLMs
