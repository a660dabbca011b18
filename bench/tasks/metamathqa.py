"""MetaMathQA rows -> training examples (a training set only: it has no held-out split).

Row fields: `query`, `response` (the response ends "The answer is: X"), `type` (e.g.
GSM_Rephrased, MATH_AnsAug), kept in the example's meta when `fields.type` is set.
"""
from __future__ import annotations

from collections.abc import Mapping

from bench.data.examples import Example
from bench.tasks.sources import Row, field


class MetaMathQAFormat:
    kind = "metamathqa"
    metrics = ()

    def example(self, row: Row, fields: Mapping, prompt_template: str, target_template: str) -> Example:
        query, response = field(row, fields, "query"), field(row, fields, "response")
        answer = response.rsplit("The answer is:", 1)[-1].strip() if "The answer is:" in response else None
        meta = {"kind": self.kind}
        if fields.get("type"):
            meta["type"] = field(row, fields, "type")
        return Example(id=row.origin, prompt=prompt_template.replace("{question}", query),
                       target=target_template.replace("{answer}", response), gold=answer, meta=meta)

    def score(self, generation: str, example: Example) -> dict:
        raise ValueError("metamathqa is a training set only; evaluate on gsm8k or math sources")
