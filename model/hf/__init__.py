"""Hugging Face seq2seq checkpoints as Sora checkpoints (`sora import hf`): family
mappings (families.py), Marian's SentencePiece files (spm.py), the importer."""
