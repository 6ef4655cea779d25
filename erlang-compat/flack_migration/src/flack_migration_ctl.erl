%% The control side of bin/flack-migration: runs on a hidden node of the
%% operator's, connects to each flack node by distribution and loads,
%% unloads or inspects flack_migration there by rpc. Nothing needs to be
%% copied to the flack nodes: the modules and our chat_stream travel as
%% binaries, so a restart of a node always boots it without them.
%%
%%   main(["load" | "unload" | "status", BuildDir, Node...])
%%
%% BuildDir holds ebin/ (our modules and flack_migration.app) and
%% priv/chat_stream.beam. Prints one line per node; halts with 0 when
%% every node succeeded, 1 otherwise.
-module(flack_migration_ctl).

-export([main/1, load/2, unload/1, status/1]).

-define(RPC_TIMEOUT, 60000).

main([Command, Dir | Nodes]) when Nodes =/= [] ->
    Results = [{Node, run(Command, Dir, list_to_atom(Node))} || Node <- Nodes],
    [io:format("~s: ~0p~n", [Node, Result]) || {Node, Result} <- Results],
    Failed = [Node || {Node, Result} <- Results, not ok(Result)],
    halt(case Failed of [] -> 0; _ -> 1 end);
main(_) ->
    io:format("usage: flack-migration load|unload|status NODE...~n"),
    halt(2).

ok(ok) -> true;
ok({ok, _}) -> true;
ok(_) -> false.

run(Command, Dir, Node) ->
    case net_adm:ping(Node) of
        pang -> {error, {unreachable, Node}};
        pong ->
            case Command of
                "load" -> load(Dir, Node);
                "unload" -> unload(Node);
                "status" -> status(Node);
                _ -> {error, {unknown_command, Command}}
            end
    end.

%% Loads our modules into Node, then starts the application, which
%% installs our chat_stream. Idempotent: a node that runs it already is
%% left alone.
-spec load(string(), node()) -> {ok, list()} | {error, term()}.
load(Dir, Node) ->
    case running(Node) of
        true -> status(Node);
        false ->
            Ebin = filename:join(Dir, "ebin"),
            {ok, [{application, flack_migration, Spec}]} =
                file:consult(filename:join(Ebin, "flack_migration.app")),
            Modules = proplists:get_value(modules, Spec),
            {ok, Ours} = file:read_file(filename:join([Dir, "priv", "chat_stream.beam"])),
            Env = [{replacement, {"chat_stream.beam", Ours}}],
            AppSpec = {application, flack_migration,
                       lists:keystore(env, 1, Spec, {env, Env})},
            case load_modules(Node, Ebin, Modules) of
                ok ->
                    _ = rpc:call(Node, application, unload, [flack_migration], ?RPC_TIMEOUT),
                    ok = rpc:call(Node, application, load, [AppSpec], ?RPC_TIMEOUT),
                    case rpc:call(Node, application, start, [flack_migration], ?RPC_TIMEOUT) of
                        ok -> status(Node);
                        Error ->
                            _ = unload(Node),
                            {error, {start_failed, Error}}
                    end;
                Error ->
                    Error
            end
    end.

load_modules(_Node, _Ebin, []) ->
    ok;
load_modules(Node, Ebin, [Module | Rest]) ->
    {ok, Binary} = file:read_file(filename:join(Ebin, atom_to_list(Module) ++ ".beam")),
    File = "flack_migration:" ++ atom_to_list(Module) ++ ".beam",
    %% A module left from an earlier load may have old code: only ever
    %% soft-purged, never killing anyone.
    case rpc:call(Node, code, soft_purge, [Module], ?RPC_TIMEOUT) of
        true ->
            case rpc:call(Node, code, load_binary, [Module, File, Binary], ?RPC_TIMEOUT) of
                {module, Module} -> load_modules(Node, Ebin, Rest);
                Error -> {error, {load_failed, Module, Error}}
            end;
        Other ->
            {error, {old_code_in_use, Module, Other}}
    end.

%% Stops the application (which puts the original's chat_stream back and
%% waits until no session runs ours), then removes our modules.
-spec unload(node()) -> ok | {error, term()}.
unload(Node) ->
    case rpc:call(Node, flack_migration_code, restore, [], ?RPC_TIMEOUT) of
        Restored when Restored =:= ok; element(1, Restored) =:= badrpc ->
            _ = rpc:call(Node, application, stop, [flack_migration], ?RPC_TIMEOUT),
            _ = rpc:call(Node, application, unload, [flack_migration], ?RPC_TIMEOUT),
            Left = [M || M <- our_modules(), not delete_module(Node, M)],
            case Left of
                [] -> ok;
                _ -> {error, {modules_still_in_use, Left}}
            end;
        Error ->
            {error, {restore_failed, Error}}
    end.

%% The modules load/2 ships (those of flack_migration.app).
our_modules() ->
    [flack_migration, flack_migration_app, flack_migration_code, flack_migration_ctl,
     flack_migration_seq, flack_migration_sup, flack_migration_watch].

delete_module(Node, Module) ->
    case rpc:call(Node, code, is_loaded, [Module], ?RPC_TIMEOUT) of
        false -> true;
        {file, _} ->
            _ = rpc:call(Node, code, delete, [Module], ?RPC_TIMEOUT),
            %% Our processes are gone with the application: nobody runs
            %% this code, and soft_purge says so rather than kill.
            rpc:call(Node, code, soft_purge, [Module], ?RPC_TIMEOUT) =:= true
    end.

-spec status(node()) -> {ok, list()} | {error, term()}.
status(Node) ->
    case running(Node) of
        false ->
            Loaded = [M || M <- our_modules(),
                           rpc:call(Node, code, is_loaded, [M], ?RPC_TIMEOUT) =/= false],
            {ok, [{running, false},
                  {chat_stream, rpc:call(Node, code, which, [chat_stream], ?RPC_TIMEOUT)},
                  {modules_loaded, Loaded}]};
        true ->
            case rpc:call(Node, flack_migration, status, [], ?RPC_TIMEOUT) of
                {badrpc, _} = Error -> {error, Error};
                Status -> {ok, [{running, true} | Status]}
            end
    end.

running(Node) ->
    case rpc:call(Node, application, which_applications, [], ?RPC_TIMEOUT) of
        Apps when is_list(Apps) -> lists:keymember(flack_migration, 1, Apps);
        _ -> false
    end.
