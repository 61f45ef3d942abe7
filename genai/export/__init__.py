"""Export trained genai models for serving: TF SavedModel (TF Serving) and TFLite/LiteRT.

  python -m genai.export --workdir runs/pydoc --out exports/pydoc --format both --quantize int8

`saved_model.save` turns JAX functions + params into a SavedModel (orbax.export, jax2tf,
params as tf.Variables); `text` and `images` hold each family's serving signatures;
`tflite` converts a signature to .tflite (float or int8 dynamic range) and runs it with
ai_edge_litert; `workdir.export_workdir` does it all for a trained workdir.
"""
