# bash completion for recmgctl (tests/integration/test_daemon.py checks it against
# recmgctl's argument parser).
_recmgctl() {
    local cur prev words cword
    _init_completion || return
    local commands="check status stats metrics reload pause resume version policy record models"
    case "${words[1]}" in
        policy)
            if [[ $cword -eq 2 ]]; then
                COMPREPLY=($(compgen -W "list show set" -- "$cur"))
            elif [[ $cword -eq 3 && ( "${words[2]}" == set || "${words[2]}" == show ) ]]; then
                COMPREPLY=($(compgen -W "$(recmgctl policy list --names 2>/dev/null)" -- "$cur"))
            fi
            return ;;
        check)
            COMPREPLY=($(compgen -W "--json --strict --sys-root --proc-root" -- "$cur")); return ;;
        status)
            COMPREPLY=($(compgen -W "--json --socket --config" -- "$cur")); return ;;
        models)
            if [[ $cword -eq 2 ]]; then
                COMPREPLY=($(compgen -W "list rollback --segment --json" -- "$cur"))
            else
                COMPREPLY=($(compgen -W "--segment --json --socket --config" -- "$cur"))
            fi
            return ;;
        record)
            COMPREPLY=($(compgen -W "--segment --batches --output --status --wait --timeout --socket --config" -- "$cur")); return ;;
    esac
    if [[ $cword -eq 1 ]]; then
        COMPREPLY=($(compgen -W "$commands --socket --config" -- "$cur"))
    fi
}
complete -F _recmgctl recmgctl
