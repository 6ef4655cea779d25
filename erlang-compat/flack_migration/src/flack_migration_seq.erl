%% Per-chat sequence numbers from the cluster's gproc counter.
%%
%% A chat's numbers come from the global counter {c,g,{flack_seq, Chat}},
%% the one the Rust nodes increment (src/cluster/directory.rs in this
%% repository), incremented at the gproc_dist leader with the same leader
%% calls a Rust node makes: {update_counter, Key, Incr, Owner} when the
%% counter exists, {reg, Key, First, Owner, [], reg} when it does not. So
%% a number handed out on an original node is never handed out again on any
%% node, Erlang or Rust, and each sender's numbers increase.
%%
%% This process owns the counters this node registers (they go away with
%% it, so stopping flack_migration leaves nothing in the registry) and the
%% table of the last number this node saw per chat, which a counter that
%% vanished with its owner's node is registered again from. Callers number
%% in their own process (one leader call per event, as the original's
%% sessions make one per join and leave); this process is never on that
%% path, so it is no bottleneck.
%%
%% When no leader answers, next/1 returns this node's own next number and
%% logs a warning, as a Rust node does: messages are not held back.
-module(flack_migration_seq).
-behaviour(gen_server).

-export([start_link/0, next/1, release_if_empty/1, last_seen/1, remember/2]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).

-define(LAST, flack_migration_last).
%% How long a numbering request may wait for the leader.
-define(LEADER_TIMEOUT, 5000).
%% How often chats without members are dropped from the table.
-define(SWEEP_MS, 30000).

start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

%% The next number of Chat, taken in the calling process.
-spec next(binary()) -> pos_integer().
next(Chat) ->
    next(Chat, 3).

next(Chat, 0) ->
    N = ets:update_counter(?LAST, Chat, 1, {Chat, 0}),
    error_logger:warning_msg("flack_migration: no sequence from the cluster for ~p; "
                             "using ~p~n", [Chat, N]),
    N;
next(Chat, Tries) ->
    Key = key(Chat),
    case counters(Key) of
        [] ->
            First = last_seen(Chat) + 1,
            Owner = whereis(?MODULE),
            case is_pid(Owner) andalso leader_call({reg, Key, First, Owner, [], reg}) of
                true ->
                    seen(Chat, First),
                    First;
                _ ->
                    next(Chat, Tries - 1)
            end;
        Counters ->
            [seen(Chat, Value) || {_, Value} <- Counters],
            %% Normally there is one. Should two nodes have registered one
            %% each at the same moment, the most advanced is the one to
            %% continue from.
            {_, Owner} = lists:max([{Value, Pid} || {Pid, Value} <- Counters]),
            case leader_call({update_counter, Key, 1, Owner}) of
                N when is_integer(N) ->
                    seen(Chat, N),
                    N;
                _ ->
                    next(Chat, Tries - 1)
            end
    end.

%% After a leave: when Chat has no member left anywhere, its counters are
%% unregistered (whoever owns them, as a Rust node does), so the registry
%% holds counters only for chats in use; a chat that fills again starts
%% from 1.
-spec release_if_empty(binary()) -> ok.
release_if_empty(Chat) ->
    case gproc:lookup_pids({p, g, Chat}) of
        [] ->
            Key = key(Chat),
            [leader_call({unreg, Key, Pid}) || {Pid, _} <- counters(Key)],
            ets:delete(?LAST, Chat),
            ok;
        _ ->
            ok
    end.

%% The highest number of Chat this node has seen (0 if none).
-spec last_seen(binary()) -> non_neg_integer().
last_seen(Chat) ->
    case ets:lookup(?LAST, Chat) of
        [{_, Last}] -> Last;
        [] -> 0
    end.

%% gen_server

init([]) ->
    ets:new(?LAST, [named_table, public, set, {write_concurrency, true}]),
    erlang:send_after(?SWEEP_MS, self(), sweep),
    {ok, #{}}.

handle_call(_Request, _From, State) ->
    {reply, {error, unknown_call}, State}.

handle_cast(_Request, State) ->
    {noreply, State}.

handle_info(sweep, State) ->
    Chats = ets:select(?LAST, [{{'$1', '_'}, [], ['$1']}]),
    [ets:delete(?LAST, Chat) || Chat <- Chats, gproc:lookup_pids({p, g, Chat}) =:= []],
    erlang:send_after(?SWEEP_MS, self(), sweep),
    {noreply, State};
handle_info(_Message, State) ->
    {noreply, State}.

terminate(_Reason, _State) ->
    ok.

%% Internals

key(Chat) ->
    {c, g, {flack_seq, Chat}}.

%% Every {Owner, Value} of the chat's counters in this node's replica.
counters(Key) ->
    ets:select(gproc, [{{{Key, '$1'}, '_', '$2'}, [{is_pid, '$1'}], [{{'$1', '$2'}}]}]).

seen(Chat, Value) ->
    case ets:lookup(?LAST, Chat) of
        [{_, Last}] when Last >= Value -> ok;
        _ -> ets:insert(?LAST, {Chat, Value})
    end.

leader_call(Request) ->
    try
        gen_leader:leader_call(gproc_dist, Request, ?LEADER_TIMEOUT)
    catch
        exit:_ -> error
    end.

%% Notes a number of Chat seen elsewhere (a counter about to vanish with
%% its owner's node), so the counter is registered again above it.
-spec remember(binary(), integer()) -> ok.
remember(Chat, Value) ->
    seen(Chat, Value),
    ok.
