"""Token-id conventions shared by every vocabulary, feature converter and encoder.

polyret pads with id 0 everywhere (seqio's convention): a model's attention mask is `tokens != PAD_ID`.
T5-family vocabularies end a text with EOS id 1; other vocabularies declare their own end id
(`vocabulary.eos_id`, e.g. [SEP] for BERT), which is what tokenisers and converters append.
"""

PAD_ID = 0
T5_EOS_ID = 1
