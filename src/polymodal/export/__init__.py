"""`polymodal export`: a trained run as ONNX graphs (`onnx.py`) or as a Hugging Face LLaVA folder (`hf.py`)."""
