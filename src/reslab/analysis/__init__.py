"""Analysis: what a model sees (class activation maps, top losses, explanations, the HTML
report of a run), class embeddings, decision regions and the heads they are drawn for, and
why residual networks train (loss landscapes, Hessian spectra, shattered gradients)."""

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
from reslab.analysis.explain import (
    Explanation,
    class_index,
    explain,
    explain_figure,
    plot_explanation,
)
from reslab.analysis.explanations import (
    Faithfulness,
    RandomizationCheck,
    deletion_insertion,
    explanations_report,
    randomization_check,
)
from reslab.analysis.explanations_plot import plot_cascade, plot_explanations
from reslab.analysis.faithfulness import curve_auc, perturbation_curves
from reslab.analysis.gradcam import CAM_METHODS, gradcam
from reslab.analysis.heads import fit_head, head_accuracy, linear_head, vgg_head
from reslab.analysis.hessian import TraceEstimate, hessian_eigenvalues, hessian_trace
from reslab.analysis.landscape import Landscape, loss_landscape
from reslab.analysis.report import REPORT_NAME, build_model_report, build_report, write_report
from reslab.analysis.sanity import randomized_cascade, rank_correlation
from reslab.analysis.shattered import GradientLine, autocorrelation, correlation_length, shattering
from reslab.analysis.top_losses import (
    TopLoss,
    plot_top_losses,
    top_losses,
    top_losses_figure,
    top_losses_records,
)

__all__ = [
    "CAM_METHODS",
    "REPORT_NAME",
    "ClassEmbeddingReport",
    "ClassEmbeddingSplit",
    "Explanation",
    "GradientLine",
    "Landscape",
    "Plane",
    "TopLoss",
    "TraceEstimate",
    "autocorrelation",
    "axis_planes",
    "build_model_report",
    "build_report",
    "class_embedding_report",
    "class_index",
    "ClassEmbeddingReport",
    "ClassEmbeddingSplit",
    "cone_disagreement",
    "curve_auc",
    "correlation_length",
    "decision_map",
    "deletion_insertion",
    "example_planes",
    "explain",
    "explain_figure",
    "Explanation",
    "explanations_report",
    "Faithfulness",
    "find_classifier",
    "fit_head",
    "gradcam",
    "head_accuracy",
    "head_in_features",
    "hessian_eigenvalues",
    "hessian_trace",
    "linear_head",
    "perturbation_curves",
    "Plane",
    "plot_cascade",
    "loss_landscape",
    "plot_decision_regions",
    "plot_explanation",
    "plot_explanations",
    "plot_top_losses",
    "randomization_check",
    "RandomizationCheck",
    "randomized_cascade",
    "rank_correlation",
    "shattering",
    "split_class_embedding",
    "top_losses",
    "top_losses_figure",
    "top_losses_records",
    "TopLoss",
    "vgg_head",
    "write_report",
]
