"""The Feast repo: declarative definitions (``definitions.py``) and the generated
``feature_store.yaml`` (``config.py``). Nothing here is imported by code that does not use Feast."""
