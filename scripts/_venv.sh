# Sourced by the scripts in this folder. `ensure_venv [EXTRAS]` makes .venv on
# first use and keeps the project installed in it (again whenever
# pyproject.toml changes), e.g. `ensure_venv test`.
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ensure_venv() {
    local extras="${1:-}"
    if ! command -v python3 >/dev/null; then
        echo "flotilla needs Python 3.11 or newer (python3 was not found)" >&2
        exit 1
    fi
    if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        echo "flotilla needs Python 3.11 or newer; python3 is $(python3 --version)" >&2
        exit 1
    fi
    if [ ! -x .venv/bin/python ]; then
        python3 -m venv .venv
    fi
    local stamp=".venv/.installed${extras:+-$extras}"
    if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
        .venv/bin/pip install --quiet --disable-pip-version-check -e ".${extras:+[$extras]}"
        touch "$stamp"
    fi
}
