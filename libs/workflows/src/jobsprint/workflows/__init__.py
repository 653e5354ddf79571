"""Jobsprint workflow definitions: models, validation, sandboxed templates, step semantics.

Pure logic: no I/O, no network, no asyncio. See README.md for the definition format.
"""

from .errors import Problem, StepFailure, TemplateError, WorkflowError, WorkflowInvalid
from .models import (
    PARAMS_MODELS,
    STEP_TYPES,
    ConditionParams,
    DelayParams,
    FailParams,
    HttpParams,
    LogParams,
    RetryPolicy,
    StepDefinition,
    StepParams,
    TransformParams,
    Trigger,
    WorkflowDefinition,
    parse_params,
)
from .netguard import check_address, parse_allow_list
from .steps import (
    HttpRequest,
    build_context,
    final_output,
    next_step_index,
    render_http,
    run_condition,
    run_fail,
    run_log,
    run_transform,
)
from .templates import check_expression, check_template, evaluate, render, render_text, truthy
from .validation import validate_workflow

__all__ = [
    "PARAMS_MODELS",
    "STEP_TYPES",
    "ConditionParams",
    "DelayParams",
    "FailParams",
    "HttpParams",
    "HttpRequest",
    "LogParams",
    "Problem",
    "RetryPolicy",
    "StepDefinition",
    "StepFailure",
    "StepParams",
    "TemplateError",
    "TransformParams",
    "Trigger",
    "WorkflowDefinition",
    "WorkflowError",
    "WorkflowInvalid",
    "build_context",
    "check_address",
    "check_expression",
    "check_template",
    "evaluate",
    "final_output",
    "next_step_index",
    "parse_allow_list",
    "parse_params",
    "render",
    "render_http",
    "render_text",
    "run_condition",
    "run_fail",
    "run_log",
    "run_transform",
    "truthy",
    "validate_workflow",
]
