"""Train stage: token shards, the sharded loader, the model, torchrun training, evaluation."""
