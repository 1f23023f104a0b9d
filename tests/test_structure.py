"""The package's shape (issue 34): no import cycle between modules, and no function outside the
click commands taking more than 8 parameters (options travel as named types)."""
import ast
import inspect

from conftest import ROOT

SRC = ROOT / 'src' / 'mrcnn_cli'


def test_no_module_imports_one_that_imports_it_back():
    import grimp
    graph = grimp.build_graph('mrcnn_cli')   # imports for type checking count: a cycle all the same
    cycles = []
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            back = graph.find_shortest_chain(importer=imported, imported=module)
            if back is not None:
                cycles.append(' -> '.join((module, *back)))
    assert not cycles, cycles


def test_no_function_but_a_command_takes_more_than_8_parameters():
    crowded = []
    for path in sorted(SRC.rglob('*.py')):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = node.args
                names = [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs if p.arg not in ('self', 'cls')]
                names += [p.arg for p in (a.vararg, a.kwarg) if p is not None]
                command = any('command' in ast.unparse(d) or 'option' in ast.unparse(d) for d in node.decorator_list)
                if len(names) > 8 and not command:
                    crowded.append(f'{path.relative_to(SRC)}:{node.lineno} {node.name}({len(names)})')
    assert not crowded, crowded


def test_the_public_types_carry_no_internal_fields():
    from mrcnn_cli import StreamItem
    assert 'tile' not in inspect.signature(StreamItem).parameters and not hasattr(StreamItem, 'to_infer')
