"""Safety tooling: moderation, classifiers and bias audits."""
