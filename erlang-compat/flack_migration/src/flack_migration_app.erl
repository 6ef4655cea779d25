%% The flack_migration application: while it runs, the node's sessions
%% number their events from the cluster's counter and its users hear that
%% members of a lost node left; when it stops, the node behaves as the
%% original again. Start installs our chat_stream after the processes it
%% needs are up; prep_stop puts the original's back before they go.
-module(flack_migration_app).
-behaviour(application).

-export([start/2, prep_stop/1, stop/1]).

start(_Type, _Args) ->
    case whereis(gproc_dist) of
        undefined -> {error, {not_in_a_cluster, "gproc_dist is not running on this node"}};
        _ -> start_in_cluster()
    end.

start_in_cluster() ->
    case flack_migration_sup:start_link() of
        {ok, Sup} ->
            case replacement() of
                {ok, Replacement} ->
                    case flack_migration_code:install(Replacement) of
                        ok -> {ok, Sup};
                        Error -> stop_sup(Sup), Error
                    end;
                Error ->
                    stop_sup(Sup),
                    Error
            end;
        Error ->
            Error
    end.

prep_stop(State) ->
    case flack_migration_code:restore() of
        ok -> ok;
        {error, Reason} ->
            error_logger:error_msg("flack_migration: the original chat_stream could not be "
                                   "put back: ~p~n", [Reason])
    end,
    State.

stop(_State) ->
    ok.

%% Our chat_stream: shipped in the application environment by the control
%% script, or read from priv/ when the application was installed as files.
replacement() ->
    case application:get_env(flack_migration, replacement) of
        {ok, {File, Binary}} when is_binary(Binary) ->
            {ok, {"flack_migration:" ++ File, Binary}};
        undefined ->
            case code:priv_dir(flack_migration) of
                {error, _} ->
                    {error, no_replacement_chat_stream};
                Priv ->
                    File = filename:join(Priv, "chat_stream.beam"),
                    case file:read_file(File) of
                        {ok, Binary} -> {ok, {"flack_migration:" ++ File, Binary}};
                        {error, Reason} -> {error, {no_replacement_chat_stream, File, Reason}}
                    end
            end
    end.

stop_sup(Sup) ->
    unlink(Sup),
    exit(Sup, shutdown).
