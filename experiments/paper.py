"""Every checkable claim of the Homogeneity Trap paper, in the paper's order.

``jaxdsm reproduce`` lists these in its index with the verdicts of the experiments that test
them. An experiment's ``Claim.source`` must equal one of the ``source`` keys below, so a
claim nobody tests shows up as "not tested" instead of vanishing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from experiments.common import Claim, table_cell


@dataclass(frozen=True)
class PaperClaim:
    source: str  # where the paper states it; experiments use it as Claim.source
    statement: str  # what the paper says, in short
    experiments: tuple[str, ...]  # the experiments that test it


PAPER_CLAIMS: tuple[PaperClaim, ...] = (
    PaperClaim("Assumption 1", "Sinkhorn DSMs are primitive: eigenvalue 1 is simple, |lambda_2| < 1",
               ("spectral-gap",)),
    PaperClaim("Remark 1", "E||P xi|| = nu sqrt((n-1)/n)", ("bounds",)),
    PaperClaim("Lemma 1", "the projected noise direction is uniform on the sphere of 1^perp",
               ("bounds",)),
    PaperClaim("Lemma 2", "||M x|| <= sigma_2(M) ||x|| for x in 1^perp", ("bounds",)),
    PaperClaim("Lemma 3", "||a/|a| - b/|b||| <= 4 ||a - b|| / ||b|| when ||a - b|| <= ||b|| / 2",
               ("bounds",)),
    PaperClaim("Eq. 4", "spectral SNR gamma ~ sigma_2 ||x_perp|| / nu", ("orthogonal-collapse",)),
    PaperClaim("Theorem 1", "for gamma <= 1/8, |<u, v>| <= eps + 8 gamma with probability "
               ">= 1 - delta - 2 exp(-n eps^2 / 2)", ("orthogonal-collapse", "bounds")),
    PaperClaim("Theorem 1 (Levy)", "P(|<u, v>| >= eps) <= 2 exp(-(n-2) eps^2 / 2) for independent "
               "uniform u, v on S^{n-2}", ("bounds",)),
    PaperClaim("Theorem 2", "effective depth D_eff(eps) = ln(1/eps) / (-ln sigma_2)", ("depth",)),
    PaperClaim("Remark 2", "||(M - J/n)^k|| <= sigma_2^k bounds transient growth", ("depth",)),
    PaperClaim("Proposition 1", "residual blocks x + phi(M x) with sigma_2 << 1 stagnate: updates "
               "vanish, no angular change with depth", ("residual-stagnation",)),
    PaperClaim("Section 4.2", "affine LayerNorm cannot restore the direction once the SNR has "
               "collapsed", ("affine-ablation",)),
    PaperClaim("Exp 1", "sigma_2 falls monotonically as T (and the entropy H) rises; high T forces "
               "sigma_2 -> 0", ("spectral-gap",)),
    PaperClaim("Exp 2 / Fig. 2", "for gamma < 0.1, output cosine similarity collapses to a "
               "zero-mean Gaussian", ("orthogonal-collapse",)),
    PaperClaim("Appendix A", "P(| ||P xi|| - nu sqrt((n-1)/n) | >= nu t / sqrt(n)) <= 2 exp(-t^2/2)",
               ("bounds",)),
    PaperClaim("Appendix B", "Wedin: sin Theta <= ||E|| / (sigma_r(A) - sigma_{r+1}(A))",
               ("bounds",)),
    PaperClaim("Appendix C", "sigma_1(M) = 1.0000 +- 1e-7 in all 1000 trials (n = 64)",
               ("spectral-gap",)),
    PaperClaim("Appendix D", "K = 200 Sinkhorn sweeps with tolerance 1e-6", ("spectral-gap",)),
)

SOURCES = frozenset(c.source for c in PAPER_CLAIMS)


def index_table(measured: dict[str, Sequence[Claim]]) -> str:
    """One row per paper claim: the verdicts of every measured claim with that source.

    ``measured`` maps experiment name -> its claims (from claims.json).
    """
    rows = ["| where | the paper says | verdicts (experiment) |", "|---|---|---|"]
    for paper_claim in PAPER_CLAIMS:
        cells = []
        for name, claims in measured.items():
            verdicts = [c.verdict for c in claims if c.source == paper_claim.source]
            counts = Counter(verdicts)
            if counts:  # in the order the experiment reports them
                tally = ", ".join(f"**{v}**" + (f" x{counts[v]}" if counts[v] > 1 else "")
                                  for v in dict.fromkeys(verdicts))
                cells.append(f"{tally} ({name})")
        rows.append(f"| {paper_claim.source} | {table_cell(paper_claim.statement)} | "
                    f"{'; '.join(cells) or '**not tested**'} |")
    return "\n".join(rows)


def unknown_sources(measured: dict[str, Sequence[Claim]]) -> list[str]:
    """Sources that match no paper claim (a typo would otherwise drop a row from the index)."""
    return sorted({c.source for claims in measured.values() for c in claims} - SOURCES)
