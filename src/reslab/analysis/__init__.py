"""Analysis: class embeddings, decision regions, and the heads they are drawn for."""

from reslab.analysis.decision import (
    Plane,
    axis_planes,
    cone_disagreement,
    decision_map,
    example_planes,
    head_in_features,
    plot_decision_regions,
)
from reslab.analysis.embeddings import (
    ClassEmbeddingReport,
    ClassEmbeddingSplit,
    class_embedding_report,
    find_classifier,
    split_class_embedding,
)
from reslab.analysis.heads import fit_head, head_accuracy, linear_head, vgg_head

__all__ = [
    "ClassEmbeddingReport",
    "ClassEmbeddingSplit",
    "Plane",
    "axis_planes",
    "class_embedding_report",
    "cone_disagreement",
    "decision_map",
    "example_planes",
    "find_classifier",
    "fit_head",
    "head_accuracy",
    "head_in_features",
    "linear_head",
    "plot_decision_regions",
    "split_class_embedding",
    "vgg_head",
]
