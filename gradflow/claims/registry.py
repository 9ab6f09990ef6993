"""The slide claims, each quoted with its deck and slide, its measured quantity and criterion.

Deck ``A``: ``000_b7f59c8cfd946d2a.txt`` ("Long Short-Term Memory (LSTM)", 32 slides).
Deck ``B``: ``002_1648299e03ab4592.txt`` (Faraz & Abbasi, "Long Short Term Memory (LSTM)").
Each claim names its experiment module in ``experiments/`` (``run``, ``verdict``, ``CRITERIA``);
verdicts are ``reproduced``, ``reproduced under conditions`` or ``not reproduced`` and always come
from the measured numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

VERDICTS = ("reproduced", "reproduced under conditions", "not reproduced")


@dataclass(frozen=True)
class Quote:
    deck: str  # "A" or "B"
    slide: int
    text: str


@dataclass(frozen=True)
class Claim:
    """One slide claim: what the slides say, what is measured and against which criterion."""

    id: str
    title: str
    quotes: tuple[Quote, ...]
    measured: str
    criterion: str  # a template: ``{key}`` (format spec allowed) for each threshold of CRITERIA
    experiment: str  # module name in experiments/

    def placeholders(self) -> set[str]:
        """The threshold names the criterion template uses."""
        import string

        return {name for _, name, _, _ in string.Formatter().parse(self.criterion) if name}

    def render(self, criteria: dict) -> str:
        """The criterion text with the thresholds ``criteria`` filled in (the ones the verdict used).

        KeyError when a placeholder has no threshold, so a text cannot quote a number the verdict
        did not use."""
        return self.criterion.format(**criteria)


CLAIMS = (
    Claim(
        "C1",
        "errors multiply per step",
        (
            Quote(
                "A",
                5,
                "Backpropagated errors multiply at each layer, resulting in exponential decay "
                "(if Gradients < 1) growth (if Gradients > 1)",
            ),
        ),
        "fitted ln-rate of ||dL/dh_t|| per step vs ln rho (linear RNN, W = rho Q) and vs mean-field "
        "theory (tanh RNN sigma_w sweep); R^2 of the exponential fit",
        "linear RNN: |rate - ln rho| <= {linear_tol:g} for every rho; tanh RNN: |rate - mean field| <= "
        "{tanh_tol:g} for every sigma_w; on every run sign(rate) = sign(theory) and R^2 >= {min_r2:g}",
        "c01_errors_multiply",
    ),
    Claim(
        "C2",
        "the BPTT gradient is a product of Jacobians with tanh' in (0, 1]",
        (Quote("B", 10, "dE3/dw = sum_k dE3/dy3 dy3/ds3 (prod_j ds_j/ds_{j-1}) ds_k/dw, tanh' in (0, 1]"),),
        "explicit product of local Jacobians vs autodiff; ||J_t|| vs the Pascanu bound ||W|| gamma",
        "max relative difference <= {product_rtol:g} (float64); max ||J_t|| - bound <= {bound_slack:g} "
        "at every step; tanh' in (0, 1]",
        "c02_bptt_product",
    ),
    Claim(
        "C3",
        "vanilla RNNs cannot learn long-distance dependencies, LSTM/GRU can",
        (
            Quote(
                "A",
                4,
                "It is very difficult to train RNNs like Vanilla (with tanh/sigmoid activation) to "
                "retain information over many time steps",
            ),
            Quote(
                "B",
                4,
                "RNN is unable to learn to connect the information in large gap. LSTM don't have "
                "large gap problem.",
            ),
        ),
        "adding problem over T: held-out MSE / baseline and solved per cell and seed",
        "LSTM and GRU solved on every seed with median held-out loss <= {gated_max_ratio:g} x baseline; "
        "tanh RNN solved on no seed, median >= {vanilla_min_ratio:g} x baseline",
        "c03_long_dependencies",
    ),
    Claim(
        "C4",
        "exploding gradients make training unstable; clipping fixes it",
        (Quote("B", 11, "Exploding Gradient: Increasing weights, Large errors, Unstability in the network"),),
        "IRNN + SGD momentum on adding T=20 with and without clip_by_global_norm(1.0)",
        "unclipped: diverged, or spiked and unsolved, on >= {unclipped_failed_fraction:.0%} of seeds; "
        "clipped: solved without diverging on >= {clipped_solved_fraction:.0%} of seeds",
        "c04_clipping",
    ),
    Claim(
        "C5",
        "non-saturating activations (ReLU) help",
        (
            Quote(
                "A",
                7,
                "Use different activation functions that are not bounded: Recent works largely use "
                "ReLU or their variants. No saturation, easy to optimize",
            ),
        ),
        "gradient rate of ReLU RNNs (orthogonal, IRNN) vs tanh RNN at init; the IRNN's dead units "
        "(zero at every step for every example) before and after training; adding results",
        "reproduced: the IRNN's rate at init is >= {min_rate_gain:g} ln/step above the tanh RNN's and "
        "every IRNN setting solves adding on >= {solved_fraction:.0%} of seeds; under conditions: only "
        "the rate",
        "c05_relu",
    ),
    Claim(
        "C6",
        "residual shortcuts preserve gradient flow through depth",
        (
            Quote("A", 8, "Can preserve gradient flow throughout the entire depth of the network"),
            Quote("A", 8, "Possible to train more than 100 layers by simply stacking residual blocks"),
        ),
        "log10(||dL/dx_0|| / ||dL/dx_L||) at init, tanh stacks, L in {10, 50, 100, 200}: residual "
        "(alpha = 1/sqrt(L)) +/- batch norm vs plain at the same init (sigma_w = 1, critical), at "
        "sigma_w^2 = 0.5, + batch norm, + layer norm, against mean field; 128-layer residual vs plain "
        "vs plain + BN MLP, Adam on a random-teacher regression, final MSE / var(y)",
        "residual (+/- BN): |log10(||dL/dx_0|| / ||dL/dx_L||)| <= {keep_decades:g} at the largest L and "
        "the deep residual MLP trains to median MSE / var(y) <= {train_ratio:g}, while no plain variant "
        "keeps its gradient within that bound or trains; under conditions if a plain variant does either",
        "c06_residual",
    ),
    Claim(
        "C7",
        "the LSTM cell state carries the gradient",
        (
            Quote(
                "A",
                14,
                "The key to LSTMs is the cell state ... It runs straight down the entire chain, "
                "with only some minor linear interactions",
            ),
            Quote("B", 15, "Cell state: Like a conveyor belt. It runs straight down the entire chain"),
        ),
        "decay rate of the c-path (and h-path) gradient against the forget bias at init, and of an LSTM "
        "before/after training on adding",
        "keeps the gradient = c-path rate >= {keep_rate:+g} ln/step; reproduced: at every forget bias "
        "and after training (median over seeds); under conditions: only at some biases or only after "
        "training",
        "c07_cell_state",
    ),
    Claim(
        "C8",
        "gates regulate the flow",
        (
            Quote("A", 15, "Gates control the flow of information to/from the memory"),
            Quote(
                "A",
                32,
                "By adding \u201cgates\u201d to an RNN, we can prevent the vanishing/exploding "
                "gradient problem.",
            ),
        ),
        "no forget / input / output gate ablations: gradient rate at init and adding results",
        "removing a gate changes the init rate by >= {min_rate_change:g} ln/step, or the adding result "
        "(solved runs, or median solve step by >= {min_steps_ratio:g}x); reproduced: for each of NFG, "
        "NIG, NOG; under conditions: for some",
        "c08_gates",
    ),
    Claim(
        "C9",
        "GRU has fewer parameters and trains faster",
        (Quote("A", 31, "GRU has significantly fewer parameters and trains faster"),),
        "parameter counts (exact), time per train step, steps to solve the adding problem",
        "GRU/LSTM weights = {weights_ratio:g} exactly; reproduced: the GRU also takes less time per step "
        "and fewer steps to solve (medians over settings); under conditions: only one of the two "
        "(time per step depends on the device)",
        "c09_gru",
    ),
    Claim(
        "C10",
        "LSTM variants perform about the same",
        (Quote("B", 26, "LSTM Variations Comparison: They're all about the same in performance"),),
        "solve step and final loss over 5 seeds per Greff et al. variant",
        "a variant is about the same when it solves on every seed with a median solve step <= "
        "{max_slowdown:g}x vanilla's; reproduced: every variant; under conditions: at most half differ",
        "c10_variants",
    ),
    Claim(
        "C11",
        "deep (stacked) LSTMs; dropout only on non-recurrent edges",
        (Quote("A", 28, "Dropout usually applied only to non-recurrent edges, including between layers"),),
        "2-layer LSTM on adding, dropout 0.25 on the upward edges, on h_{t-1} (fresh mask per step, or "
        "one per sequence) or on c_{t-1}: held-out loss / baseline, solved, gradient rate at init",
        "reproduced: upward dropout reaches <= {max_upward_ratio:g} x baseline and every recurrent "
        "placement stays >= {min_memory_ratio:g} x baseline (medians); under conditions: only some "
        "recurrent placements do",
        "c11_stacked",
    ),
    Claim(
        "C12",
        "bidirectional LSTMs use future context",
        (Quote("A", 29, "Bidirectional RNNs can better exploit context in both directions"),),
        "lookahead task: unidirectional vs bidirectional LSTM",
        "every bidirectional setting <= {bidirectional_max_ratio:g} x baseline and every unidirectional "
        ">= {unidirectional_min_ratio:g} x baseline (medians); under conditions: only some "
        "bidirectional settings",
        "c12_bidirectional",
    ),
    Claim(
        "C13",
        "trained LSTMs/GRUs retain state longer",
        (
            Quote(
                "A",
                32,
                "Trained LSTMs/GRUs can retain state information longer and handle long-distance "
                "dependencies.",
            ),
        ),
        "gradient decay rate (half-life) and top Lyapunov exponent of the carry dynamics before vs "
        "after training on the adding problem",
        "the gradient decay rate and the top Lyapunov exponent both rise by >= {min_rate_gain:g} "
        "ln/step for every LSTM and GRU setting (under conditions: for some)",
        "c13_retention",
    ),
    Claim(
        "C14",
        "the slides' architectures: encoder-decoder and CNN-LSTM",
        (
            Quote(
                "A",
                25,
                'Encoder/Decoder framework maps one sequence to a "deep vector" then another LSTM '
                "maps this vector to an output sequence.",
            ),
            Quote(
                "B",
                27,
                "CNN-LSTM: an LSTM architecture specifically designed for sequence prediction "
                "problems with spatial inputs, like images or videos.",
            ),
        ),
        "seq2seq copy task (8 symbols, LSTM 64, teacher forcing), source normal vs reversed, paired "
        "seeds: log10 ||dL_j/dx_src(j)|| per target position at init and after training; held-out "
        "loss / ln 8; gradient of the decoder loss per encoder step. CNN-LSTM (flax conv per frame, "
        "then an LSTM): decay rate of ||dL/dframe_t|| vs the same LSTM fed the features",
        "reversal raises the first 3 targets' gradient at init by >= {min_first_gain:g} decades and "
        "lowers the held-out loss / ln 8 by >= {min_loss_gain:g} at every source length; every "
        "CNN-LSTM frame gets a finite gradient >= 10^{min_frame_log10:g} with a per-frame rate within "
        "{max_rate_rel_diff:.0%} of its LSTM's; not reproduced if the reversal gain is missing at "
        "every length",
        "c14_architectures",
    ),
)


def get(claim_id: str) -> Claim:
    """The claim ``claim_id`` ('C1'...'C14'); ValueError lists the ids."""
    for claim in CLAIMS:
        if claim.id == claim_id:
            return claim
    raise ValueError(f"unknown claim {claim_id!r}; choose from {[c.id for c in CLAIMS]}")
