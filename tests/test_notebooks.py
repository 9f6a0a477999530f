"""Every notebook runs top to bottom offline: on the organism as shipped, and unchanged on GPT-2 by hub name from the
Hugging Face cache (its parameters set the way papermill does: a cell after the one tagged `parameters`)."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK_DIR = Path(__file__).parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
ON_GPT2 = {  # notebook -> the parameters of a run on the paper's model, kept small for the suite
    "00_tour.ipynb": {"MODEL": "gpt2"},
    "article.ipynb": {"MODEL": "gpt2"},
    "ioi.ipynb": {"MODEL": "gpt2", "N": 8},
    "capitals.ipynb": {"MODEL": "gpt2-medium", "N_PROMPTS": 3, "N_TEXTS": 5, "ABLATION_KS": [0, 1]},
}


def run_notebook(path: Path, tmp_path: Path, parameters: dict | None = None):
    book = nbformat.read(path, as_version=4)
    if parameters:
        tagged = [i for i, cell in enumerate(book.cells) if "parameters" in cell.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{path.name} needs exactly one cell tagged 'parameters'"
        assert all(f"{name} =" in book.cells[tagged[0]].source for name in parameters), "unknown parameter"
        injected = nbformat.v4.new_code_cell("\n".join(f"{name} = {value!r}" for name, value in parameters.items()))
        injected.metadata["tags"] = ["injected-parameters"]
        book.cells.insert(tagged[0] + 1, injected)
    NotebookClient(book, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [
        out for cell in book.cells if cell.cell_type == "code" for out in cell.outputs if out.output_type == "error"
    ]
    assert not errors
    return book


def test_notebooks_are_stored_without_outputs():
    for path in NOTEBOOKS:
        book = nbformat.read(path, as_version=4)
        assert all(not cell.get("outputs") for cell in book.cells if cell.cell_type == "code"), path.name


def test_every_notebook_takes_the_model_as_a_parameter():
    assert sorted(ON_GPT2) == [path.name for path in NOTEBOOKS]
    for path in NOTEBOOKS:
        book = nbformat.read(path, as_version=4)
        first_code = next(cell for cell in book.cells if cell.cell_type == "code")
        assert first_code.metadata.get("tags") == ["parameters"] and 'MODEL = "organism"' in first_code.source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_on_the_organism(path, tmp_path):
    run_notebook(path, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_unchanged_on_gpt2_from_the_hf_cache(path, tmp_path, from_hub_cache):
    book = run_notebook(path, tmp_path, ON_GPT2[path.name])
    printed = "".join(out.get("text", "") for cell in book.cells if cell.cell_type == "code" for out in cell.outputs)
    n_layers = {"gpt2": 12, "gpt2-medium": 24}[ON_GPT2[path.name]["MODEL"]]
    assert f"{n_layers} layers" in printed or f"{n_layers} blocks" in printed
