%% Swapping `chat_stream` without killing anyone.
%%
%% Loading a module turns its current code into "old" code; processes still
%% running the old code keep running it until they return from it, and a
%% purge of old code KILLS the processes still in it (code:purge/1, and the
%% purge a load does first). Every swap here therefore starts with
%% code:soft_purge/1, which removes old code only when no process runs it,
%% and waits (a sessions' call into chat_stream takes microseconds, or one
%% leader call) until it can; if it cannot within the deadline, the swap is
%% refused and nothing changes. After that the load has no old code to
%% purge: nobody is killed, and every call made after the load runs the
%% new code.
%%
%% install/1 keeps the ORIGINAL's object code (read from the node's own
%% code path, and checked to be exactly the code that is running) in the
%% application environment, and restore/0 loads it back, so the original
%% behaviour returns byte for byte.
-module(flack_migration_code).

-export([install/1, restore/0, installed/0, soft_purge/2]).

-define(MODULE_NAME, chat_stream).
-define(API, [{join, 3}, {leave, 2}, {post, 1}, {register_user, 2}]).
%% How long a swap waits for processes to leave old code, unless the
%% application environment says otherwise (purge_deadline_ms).
-define(PURGE_DEADLINE_MS, application:get_env(flack_migration, purge_deadline_ms, 10000)).

%% Hot-loads our chat_stream ({Filename, Binary}) in place of the original's.
-spec install({string(), binary()}) -> ok | {error, term()}.
install({OurFile, OurBinary}) ->
    case installed() of
        true -> ok;
        false -> install_over_original(OurFile, OurBinary)
    end.

install_over_original(OurFile, OurBinary) ->
    case original() of
        {ok, Original} ->
            case soft_purge(?MODULE_NAME, ?PURGE_DEADLINE_MS) of
                true ->
                    application:set_env(flack_migration, original, Original),
                    case code:load_binary(?MODULE_NAME, OurFile, OurBinary) of
                        {module, ?MODULE_NAME} -> ok;
                        {error, Reason} -> {error, {load_failed, Reason}}
                    end;
                false ->
                    {error, {busy, old_chat_stream_in_use}}
            end;
        Error ->
            Error
    end.

%% Puts the original's chat_stream back, then waits until no process runs
%% ours any more (so our other modules may go). {error, _} leaves ours in
%% place when the original could not be loaded back.
-spec restore() -> ok | {error, term()}.
restore() ->
    case {installed(), application:get_env(flack_migration, original)} of
        {false, _} ->
            ok;
        {true, undefined} ->
            {error, original_code_unknown};
        {true, {ok, {File, Binary}}} ->
            case soft_purge(?MODULE_NAME, ?PURGE_DEADLINE_MS) of
                false ->
                    {error, {busy, old_chat_stream_in_use}};
                true ->
                    case code:load_binary(?MODULE_NAME, File, Binary) of
                        {module, ?MODULE_NAME} ->
                            %% Ours is old code now; wait for it to drain.
                            case soft_purge(?MODULE_NAME, ?PURGE_DEADLINE_MS) of
                                true -> ok;
                                false ->
                                    error_logger:warning_msg(
                                      "flack_migration: a process still runs our chat_stream; "
                                      "it finishes with the original's numbering (42)~n"),
                                    ok
                            end;
                        {error, Reason} ->
                            {error, {load_failed, Reason}}
                    end
            end
    end.

%% Whether the chat_stream running now is ours.
-spec installed() -> boolean().
installed() ->
    case code:is_loaded(?MODULE_NAME) of
        {file, File} when is_list(File) -> lists:prefix("flack_migration:", File);
        _ -> false
    end.

%% The original's object code from the code path, if it is exactly what
%% runs now (or nothing runs yet) and has the API its sessions call.
original() ->
    case code:get_object_code(?MODULE_NAME) of
        error ->
            {error, {no_chat_stream_on_code_path, ?MODULE_NAME}};
        {?MODULE_NAME, Binary, File} ->
            {ok, {?MODULE_NAME, Md5}} = beam_lib:md5(Binary),
            Running = case code:is_loaded(?MODULE_NAME) of
                          false -> Md5;
                          _ -> ?MODULE_NAME:module_info(md5)
                      end,
            {ok, {?MODULE_NAME, [{exports, Exports}]}} = beam_lib:chunks(Binary, [exports]),
            Missing = ?API -- Exports,
            if
                Running =/= Md5 ->
                    {error, {running_chat_stream_differs_from, File}};
                Missing =/= [] ->
                    {error, {not_flacks_chat_stream, File, missing, Missing}};
                true ->
                    {ok, {File, Binary}}
            end
    end.

%% code:soft_purge/1 until it succeeds or Deadline ms have passed.
-spec soft_purge(module(), non_neg_integer()) -> boolean().
soft_purge(Module, Deadline) ->
    case code:soft_purge(Module) of
        true -> true;
        false when Deadline =< 0 -> false;
        false ->
            timer:sleep(50),
            soft_purge(Module, Deadline - 50)
    end.
