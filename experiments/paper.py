"""Every checkable claim of the two papers, in the papers' order.

``jaxdsm reproduce`` lists these in its index with the verdicts of the experiments that test
them. An experiment's ``Claim.source`` must equal one of the ``source`` keys below, so a
claim nobody tests shows up as "not tested" instead of vanishing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from experiments.common import CONTEXT, Claim, table_cell


@dataclass(frozen=True)
class PaperClaim:
    paper: str  # HOMOGENEITY_TRAP or EPH_ASC
    source: str  # where the paper states it; experiments use it as Claim.source
    statement: str  # what the paper says, in short
    experiments: tuple[str, ...]  # the experiments that test it


HOMOGENEITY_TRAP = "The Homogeneity Trap (arXiv 2601.02080)"
EPH_ASC = "EPH-ASC (arXiv 2601.23039; summary only)"

PAPER_CLAIMS: tuple[PaperClaim, ...] = (
    PaperClaim(
        HOMOGENEITY_TRAP,
        "Assumption 1",
        "Sinkhorn DSMs are primitive: eigenvalue 1 is simple, |lambda_2| < 1",
        ("spectral-gap",),
    ),
    PaperClaim(HOMOGENEITY_TRAP, "Remark 1", "E||P xi|| = nu sqrt((n-1)/n)", ("bounds",)),
    PaperClaim(
        HOMOGENEITY_TRAP,
        "Lemma 1",
        "the projected noise direction is uniform on the sphere of 1^perp",
        ("bounds",),
    ),
    PaperClaim(
        HOMOGENEITY_TRAP, "Lemma 2", "||M x|| <= sigma_2(M) ||x|| for x in 1^perp", ("bounds",)
    ),
    PaperClaim(
        HOMOGENEITY_TRAP,
        "Lemma 3",
        "||a/|a| - b/|b||| <= 4 ||a - b|| / ||b|| when ||a - b|| <= ||b|| / 2",
        ("bounds",),
    ),
    PaperClaim(
        HOMOGENEITY_TRAP,
        "Eq. 4",
        "spectral SNR gamma ~ sigma_2 ||x_perp|| / nu",
        ("orthogonal-collapse",),
    ),
    PaperClaim(
        HOMOGENEITY_TRAP,
        "Theorem 1",
        "for gamma <= 1/8, |<u, v>| <= eps + 8 gamma with probability "
        ">= 1 - delta - 2 exp(-n eps^2 / 2)",
        ("orthogonal-collapse", "bounds"),
    ),
    PaperClaim(
        HOMOGENEITY_TRAP,
        "Theorem 1 (Levy)",
        "P(|<u, v>| >= eps) <= 2 exp(-(n-2) eps^2 / 2) for independent uniform u, v on S^{n-2}",
        ("bounds",),
    ),
    PaperClaim(
        HOMOGENEITY_TRAP,
        "Theorem 2",
        "effective depth D_eff(eps) = ln(1/eps) / (-ln sigma_2)",
        ("depth",),
    ),
    PaperClaim(
        HOMOGENEITY_TRAP,
        "Remark 2",
        "||(M - J/n)^k|| <= sigma_2^k bounds transient growth",
        ("depth",),
    ),
    PaperClaim(
        HOMOGENEITY_TRAP,
        "Proposition 1",
        "residual blocks x + phi(M x) with sigma_2 << 1 stagnate: updates "
        "vanish, no angular change with depth",
        ("residual-stagnation",),
    ),
    PaperClaim(
        HOMOGENEITY_TRAP,
        "Section 4.2",
        "affine LayerNorm cannot restore the direction once the SNR has collapsed",
        ("affine-ablation",),
    ),
    PaperClaim(
        HOMOGENEITY_TRAP,
        "Exp 1",
        "sigma_2 falls monotonically as T (and the entropy H) rises; high T forces sigma_2 -> 0",
        ("spectral-gap",),
    ),
    PaperClaim(
        HOMOGENEITY_TRAP,
        "Exp 2 / Fig. 2",
        "for gamma < 0.1, output cosine similarity collapses to a zero-mean Gaussian",
        ("orthogonal-collapse",),
    ),
    PaperClaim(
        HOMOGENEITY_TRAP,
        "Appendix A",
        "P(| ||P xi|| - nu sqrt((n-1)/n) | >= nu t / sqrt(n)) <= 2 exp(-t^2/2)",
        ("bounds",),
    ),
    PaperClaim(
        HOMOGENEITY_TRAP,
        "Appendix B",
        "Wedin: sin Theta <= ||E|| / (sigma_r(A) - sigma_{r+1}(A))",
        ("bounds",),
    ),
    PaperClaim(
        HOMOGENEITY_TRAP,
        "Appendix C",
        "sigma_1(M) = 1.0000 +- 1e-7 in all 1000 trials (n = 64)",
        ("spectral-gap",),
    ),
    PaperClaim(
        HOMOGENEITY_TRAP,
        "Appendix D",
        "K = 200 Sinkhorn sweeps with tolerance 1e-6",
        ("spectral-gap",),
    ),
    PaperClaim(
        EPH_ASC,
        "EPH-ASC (collapse)",
        "exponential cooling locks into wrong assignments or "
        "gradient explosions; EPH-ASC avoids them",
        ("matching",),
    ),
    PaperClaim(
        EPH_ASC,
        "EPH-ASC (vs Gumbel)",
        "EPH-ASC converges 1.6x faster than Gumbel-Sinkhorn",
        ("matching",),
    ),
    PaperClaim(
        EPH_ASC,
        "EPH-ASC (speed limit)",
        "stability needs annealing steps ~ eps^2; the "
        "closed-loop controller beats open-loop cooling",
        ("matching",),
    ),
    PaperClaim(
        EPH_ASC,
        "EPH-ASC (QSA)",
        "Phase I calibration (QSA) anticipates where braking is needed",
        ("matching",),
    ),
)

SOURCES = frozenset(c.source for c in PAPER_CLAIMS)


def index_table(measured: dict[str, Sequence[Claim]]) -> str:
    """One row per paper claim: the verdicts of every measured claim with that source.

    ``measured`` maps experiment name -> its claims (from claims.json).
    """
    rows = []
    for paper in dict.fromkeys(c.paper for c in PAPER_CLAIMS):
        rows += [
            f"### {paper}",
            "",
            "| where | the paper says | verdicts (experiment) |",
            "|---|---|---|",
        ]
        for paper_claim in (c for c in PAPER_CLAIMS if c.paper == paper):
            rows.append(
                f"| {paper_claim.source} | {table_cell(paper_claim.statement)} | "
                f"{_tally(paper_claim.source, measured)} |"
            )
        rows.append("")
    return "\n".join(rows).rstrip()


def _tally(source: str, measured: dict[str, Sequence[Claim]]) -> str:
    """e.g. "**holds** x3, **fails** (depth)": verdicts in the order the experiment reports them."""
    cells = []
    for name, claims in measured.items():
        verdicts = [c.verdict for c in claims if c.source == source and c.verdict != CONTEXT]
        counts = Counter(verdicts)
        if counts:
            tally = ", ".join(
                f"**{v}**" + (f" x{counts[v]}" if counts[v] > 1 else "")
                for v in dict.fromkeys(verdicts)
            )
            cells.append(f"{tally} ({name})")
    return "; ".join(cells) or "**not tested**"


def unknown_sources(measured: dict[str, Sequence[Claim]]) -> list[str]:
    """Sources of verdicts that match no paper claim (a typo would otherwise drop a row from
    the index). CONTEXT rows are measurements, not claims, and may cite anything."""
    cited = {c.source for claims in measured.values() for c in claims if c.verdict != CONTEXT}
    return sorted(cited - SOURCES)
