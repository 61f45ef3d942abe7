"""User feedback on served generations: durable storage (store.py) and exports for retraining."""
