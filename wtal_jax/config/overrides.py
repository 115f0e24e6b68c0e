"""``--config.KEY=VALUE``: a value parsed by the type of the field it replaces, never ``eval``'d.

Booleans, integers and floats as written; tuples as a JSON list, a comma list (refused for
strings where ambiguous) or, for float tuples, a range ``START:STOP:STEP`` with STOP included.
"""

import json

from wtal_jax.errors import UserError


def _parse_range(text: str, key: str) -> tuple[float, ...]:
    """``START:STOP:STEP`` (STOP included) as floats, parsed as ``wtal-jax map`` parses it."""
    from wtal_jax.postprocess.eval_files import parse_tiou_thresholds  # NumPy only, no JAX
    try:
        return tuple(float(v) for v in parse_tiou_thresholds(text))
    except UserError as e:
        raise UserError(f'--config.{key}={text}: {e}') from None


def _parse_string_list(text: str, key: str) -> list[str]:
    """A comma list of strings, refused where the commas are ambiguous.

    ``Rock, paper, scissors,Knitting`` could be one class name or three; an item that starts with
    a space after a comma, or any quote, asks for the JSON form, which says it exactly.
    """
    items = text.split(',')
    if any(q in text for q in '"\'') or any(item.startswith(' ') for item in items[1:]):
        suggestion = json.dumps([item.strip().strip('"\'') for item in items if item.strip()])
        raise UserError(f'--config.{key}={text}: ambiguous comma list (a name may itself contain '
                        f"', ' or quotes); give a JSON list, e.g. --config.{key}='{suggestion}'")
    return [item for item in items if item.strip()]


def _json_list(text: str, key: str) -> list:
    """A JSON list of scalars (strings, numbers, booleans)."""
    items = json.loads(text)
    if not isinstance(items, list):
        raise ValueError(text)
    for item in items:
        if not isinstance(item, (str, int, float, bool)):
            raise UserError(f'--config.{key}={text}: list items must be strings or numbers, '
                            f'got {json.dumps(item)}')
    return items


def parse_value(text: str, current, key: str):
    """Parses ``text`` as the type of ``current`` (bool, int, float, str, tuple).

    Tuples take a JSON list (``["Rock, paper, scissors", "Knitting"]``), a comma list
    (``0.3,0.5,0.7``; refused for strings where ambiguous), or, for float tuples, a range
    ``START:STOP:STEP`` with STOP included (``0.5:0.95:0.05``).
    """
    try:
        if isinstance(current, bool):
            if text.lower() in ('1', 'true', 'yes'):
                return True
            if text.lower() in ('0', 'false', 'no'):
                return False
            raise ValueError(text)
        if isinstance(current, int):
            return int(text)
        if isinstance(current, float):
            return float(text)
        if isinstance(current, (tuple, list)):
            element = current[0] if current else None  # an empty tuple gives no element type
            if text.strip().startswith('['):
                items = _json_list(text, key)
            elif isinstance(element, float) and ':' in text:
                return _parse_range(text, key)
            elif isinstance(element, (float, int)) and not isinstance(element, bool):
                items = [v for v in text.split(',') if v.strip()]
            else:
                items = _parse_string_list(text, key)
            if element is None:  # keep what JSON or the comma list says
                return tuple(items)
            if isinstance(element, str):
                for item in items:
                    if not isinstance(item, str):  # ["A", 1]: a number where names are expected
                        raise UserError(f'--config.{key}={text}: expected a list of strings, '
                                        f'got {json.dumps(item)}')
            return tuple(parse_value(str(v), element, key) for v in items)
    except (ValueError, json.JSONDecodeError) as e:
        raise UserError(f'--config.{key}={text}: cannot parse as {type(current).__name__}') from e
    return text
