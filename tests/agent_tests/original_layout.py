"""The original ActorNet's state-dict layout (original `actor_critic.py`), written out by hand once for the agent
tests."""

from __future__ import annotations

D = 192


def original_actor_shapes(embed_dim: int = D) -> dict[str, tuple[int, ...]]:
    """The original's `actor_critic.py` ActorNet state dict, written out by hand."""
    shapes: dict[str, tuple[int, ...]] = {}
    for i, d_in in enumerate((32, 1, 4, embed_dim)):
        shapes |= {
            f"input_layers.{i}.0.weight": (128, d_in),
            f"input_layers.{i}.0.bias": (128,),
            f"input_layers.{i}.1.weight": (128,),
            f"input_layers.{i}.1.bias": (128,),
        }
    shapes |= {
        "pooling.input_layer.0.weight": (256, 512),
        "pooling.input_layer.0.bias": (256,),
        "pooling.input_layer.1.weight": (256,),
        "pooling.input_layer.1.bias": (256,),
        "pooling.attention.0.weight": (256, 256),
        "pooling.attention.0.bias": (256,),
        "pooling.attention.2.weight": (8, 256),
        "pooling.attention.2.bias": (8,),
        "pooling.output_layer.0.weight": (256, 256),
        "pooling.output_layer.0.bias": (256,),
        "pooling.output_layer.1.weight": (256,),
        "pooling.output_layer.1.bias": (256,),
        "patch_net_conv.0.weight": (8, 3, 5, 5),
        "patch_net_conv.0.bias": (8,),
        "patch_net_conv.1.weight": (8,),
        "patch_net_conv.1.bias": (8,),
        "patch_net_conv.1.running_mean": (8,),
        "patch_net_conv.1.running_var": (8,),
        "patch_net_conv.1.num_batches_tracked": (),
        "patch_net_conv.4.weight": (32, 8, 5, 5),
        "patch_net_conv.4.bias": (32,),
        "patch_net_conv.5.weight": (32,),
        "patch_net_conv.5.bias": (32,),
        "patch_net_conv.5.running_mean": (32,),
        "patch_net_conv.5.running_var": (32,),
        "patch_net_conv.5.num_batches_tracked": (),
        "head.0.weight": (256, 256),
        "head.0.bias": (256,),
        "head.2.weight": (6, 256),
        "head.2.bias": (6,),
    }
    return shapes
