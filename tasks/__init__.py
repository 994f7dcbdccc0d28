"""Summarization tasks: a registry of definitions, loaders for local and HF data, validation.

``load_task("demo")`` gives the built-in synthetic demo task written for this project.
"""

from tasks.load import load_task
from tasks.registry import get_task, list_tasks
from tasks.types import Problem, TaskData, TaskDefinition, TaskRecord

__all__ = ["load_task", "get_task", "list_tasks", "Problem", "TaskData", "TaskDefinition", "TaskRecord"]
