"""The slide claims: the registry (each claim quoted with its deck and slide, its criterion) and
running them into a report. Verdicts always come from the measured numbers."""

from gradflow.claims.registry import CLAIMS as CLAIMS
from gradflow.claims.registry import VERDICTS as VERDICTS
from gradflow.claims.registry import Claim as Claim
from gradflow.claims.registry import Quote as Quote
from gradflow.claims.registry import get as get
from gradflow.claims.report import Result as Result
from gradflow.claims.report import finish_report as finish_report
from gradflow.claims.report import json_ready as json_ready
from gradflow.claims.report import load_experiment as load_experiment
from gradflow.claims.report import open_report as open_report
from gradflow.claims.report import run_claim as run_claim
from gradflow.claims.report import write_report as write_report
